"""Writers of decoded records: JSON lines, CSV and Parquet, each row one Kafka record.

Row shape (all formats): ``_partition``, ``_offset``, ``_timestamp`` (Kafka record timestamp, UTC),
``_key``, then the value's fields. JSON and CSV write times as ISO 8601; CSV writes lists, maps
and records as JSON text; Parquet keeps the Avro types (``streamscore.analyst.arrow``).

Files are written to a temporary name next to the target and renamed on success, so a failed or
interrupted replay leaves no partial file behind.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Message

from streamscore.analyst.arrow import Column, record_columns
from streamscore.analyst.inputs import BadInput, Format

SchemaOf = Callable[[], dict[str, Any] | None]
META: dict[str, Column] = {
    "_partition": Column(pa.int32()),
    "_offset": Column(pa.int64()),
    "_timestamp": Column(pa.timestamp("ms", tz="UTC"), nullable=True),
    "_key": Column(pa.string(), nullable=True),
}


def meta(msg: Message) -> dict[str, Any]:
    """The Kafka coordinates of a record, as the first columns of a row."""
    kind, ts = msg.timestamp()
    key = msg.key()
    return {
        "_partition": msg.partition(),
        "_offset": msg.offset(),
        "_timestamp": datetime.fromtimestamp(ts / 1000, UTC) if kind and ts >= 0 else None,
        "_key": key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key,
    }


def plain(value: Any) -> Any:
    """JSON-compatible form of a decoded Avro value (``json.dumps`` default)."""
    if isinstance(value, datetime):
        spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
        return value.isoformat(timespec=spec)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, default=plain, ensure_ascii=False)


class RowWriter(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _Target:
    """The output: stdout, or a temporary file renamed onto ``path`` by ``commit``."""

    def __init__(self, path: Path | None, binary: bool) -> None:
        self.path = path
        self.tmp: Path | None = None
        if path is None:
            self.stream: IO[Any] = sys.stdout.buffer if binary else sys.stdout
            return
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        self.tmp = Path(name)
        self.stream = os.fdopen(fd, "wb" if binary else "w", newline="" if not binary else None)

    def commit(self) -> None:
        if self.tmp is None:
            self.stream.flush()
            return
        self.stream.close()
        os.replace(self.tmp, self.path)  # type: ignore[arg-type]

    def abort(self) -> None:
        if self.tmp is not None:
            self.stream.close()
            self.tmp.unlink(missing_ok=True)


class JsonlWriter:
    def __init__(self, target: _Target) -> None:
        self.target = target

    def write(self, row: dict[str, Any]) -> None:
        self.target.stream.write(json_line(row) + "\n")

    def close(self) -> None:
        self.target.commit()

    def abort(self) -> None:
        self.target.abort()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json_line(value)  # type: ignore[arg-type]
    if isinstance(value, datetime | date | time | bytes | Decimal):
        return plain(value)
    return value


class CsvWriter:
    """Columns from the reader schema (known once the first record decoded)."""

    def __init__(self, target: _Target, schema_of: SchemaOf) -> None:
        self.target = target
        self.schema_of = schema_of
        self.writer: csv.DictWriter[str] | None = None

    def _open(self, first: dict[str, Any] | None) -> csv.DictWriter[str]:
        schema = self.schema_of()
        names = list(META) + [f["name"] for f in schema["fields"]] if schema else list(first or META)
        writer = csv.DictWriter(self.target.stream, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        return writer

    def write(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            self.writer = self._open(row)
        self.writer.writerow({k: _cell(v) for k, v in row.items()})

    def close(self) -> None:
        if self.writer is None:
            self.writer = self._open(None)
        self.target.commit()

    def abort(self) -> None:
        self.target.abort()


class ParquetWriter:
    """Row groups of ``batch`` rows; the Arrow schema comes from the Avro reader schema."""

    def __init__(self, target: _Target, schema_of: SchemaOf, batch: int = 10_000) -> None:
        self.target = target
        self.schema_of = schema_of
        self.batch = batch
        self.rows: list[dict[str, Any]] = []
        self.columns: dict[str, Column] | None = None
        self.writer: pq.ParquetWriter | None = None

    def _open(self) -> None:
        schema = self.schema_of()
        self.columns = META | (record_columns(schema) if schema else {})
        arrow = pa.schema([pa.field(n, c.type, nullable=c.nullable) for n, c in self.columns.items()])
        self.writer = pq.ParquetWriter(self.target.stream, arrow, compression="zstd")

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if self.writer is None:
            self._open()
        assert self.writer is not None and self.columns is not None
        if not self.rows:
            return
        converts = {n: c.convert for n, c in self.columns.items() if c.convert}
        rows = (
            [r | {n: f(r.get(n)) for n, f in converts.items()} for r in self.rows] if converts else self.rows
        )
        self.writer.write_table(pa.Table.from_pylist(rows, schema=self.writer.schema))
        self.rows = []

    def close(self) -> None:
        self._flush()
        assert self.writer is not None
        self.writer.close()
        self.target.commit()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.target.abort()


def check_output(fmt: Format, path: Path | None) -> None:
    """BadInput for an output that cannot be written (checked before anything is created)."""
    if fmt is Format.parquet and path is None:
        raise BadInput("--format parquet needs --out PATH (Parquet is not written to stdout)")
    if path is None:
        return
    if path.is_dir():
        raise BadInput(f"--out {path} is a directory")
    if not path.parent.is_dir():
        raise BadInput(f"--out {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise BadInput(f"--out {path}: directory {path.parent} is not writable")


def open_writer(fmt: Format, path: Path | None, schema_of: SchemaOf) -> RowWriter:
    """A writer for ``fmt`` on ``path`` (stdout when None); call after ``check_output``.

    ``schema_of`` returns the Avro reader schema, asked when the first row is written.
    """
    if fmt is Format.parquet:
        return ParquetWriter(_Target(path, binary=True), schema_of)
    target = _Target(path, binary=False)
    return CsvWriter(target, schema_of) if fmt is Format.csv else JsonlWriter(target)
