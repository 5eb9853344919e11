"""Exception hierarchy of streamscore.

Every error the pipeline raises on purpose derives from :class:`StreamscoreError` and says
whether retrying can help (``retriable``), so each stage decides the same way:

- ``ConfigError``      bad configuration or a missing/invalid artifact: stop at start, name the setting.
- ``TransientError``   infrastructure that may recover (broker, registry, database, HTTP): retry with
  backoff and stop committing meanwhile; never send the record to the DLQ for it.
  - ``RegistryUnavailable``
- ``DataError``        this record can never succeed as it is: route it to the DLQ with ``stage``.
  - ``DecodeError``    bytes that are not a valid Confluent-framed Avro value.
  - ``ValidationError`` a payload that breaks the cleaning rules.
  - ``EncodeError``    a value that does not match its Avro schema exactly.
"""

from __future__ import annotations


class StreamscoreError(Exception):
    """Base of every streamscore error."""

    retriable: bool = False


class ConfigError(StreamscoreError):
    """Invalid configuration; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"invalid setting {setting}: {problem}")
        self.setting = setting
        self.problem = problem


class TransientError(StreamscoreError):
    """A failure of infrastructure that retrying with backoff may cure."""

    retriable = True


class RegistryUnavailable(TransientError):
    """The schema registry could not be reached or answered 5xx."""


class DataError(StreamscoreError):
    """A record that cannot be processed as it is; it belongs in the DLQ."""

    stage = "data"


class DecodeError(DataError):
    stage = "decode"


class ValidationError(DataError):
    stage = "validate"


class EncodeError(DataError):
    stage = "encode"
