"""A small Confluent-compatible schema registry client with a disk cache.

Written here rather than taken from ``confluent_kafka.schema_registry`` because the pipeline
needs two things that client does not give: schemas cached on disk by id, so a process restarted
while the registry is down still decodes and encodes what it has seen (DESIGN.md: wait and retry
with cached schemas), and one retry policy shared with the rest of streamscore (tenacity).
Works with Confluent, Apicurio (``/apis/ccompat/v7``), Karapace and Redpanda.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import structlog
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from streamscore.errors import ConfigError, RegistryUnavailable
from streamscore.settings import RegistrySettings

log = structlog.get_logger(__name__)
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRejected(Exception):
    """The registry refused a schema (e.g. 409 incompatible, 422 invalid)."""

    def __init__(self, subject: str, status: int, body: str) -> None:
        super().__init__(f"registry refused schema for {subject}: HTTP {status}: {body[:300]}")
        self.subject = subject
        self.status = status


def canonical(schema: dict[str, Any] | str) -> str:
    """A stable JSON text of a schema, used as its cache fingerprint."""
    obj = json.loads(schema) if isinstance(schema, str) else schema
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def fingerprint(schema: dict[str, Any] | str) -> str:
    return hashlib.sha256(canonical(schema).encode()).hexdigest()[:32]


_retrying = retry(
    retry=retry_if_exception_type(RegistryUnavailable),
    stop=stop_after_attempt(4),
    wait=wait_exponential_jitter(multiplier=0.2, max=3.0, jitter=0.2),
    reraise=True,
)


class SchemaRegistry:
    """Synchronous client; calls are rare (start-up, first sight of a schema id)."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        auth = None
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else ""
            auth = httpx.BasicAuth(settings.username, password)
        self._http = httpx.Client(
            base_url=settings.url,
            timeout=settings.timeout_s,
            auth=auth,
            headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
        )
        url_key = hashlib.sha256(settings.url.encode()).hexdigest()[:12]
        self._cache = Path(settings.cache_dir) / url_key
        self._by_id: dict[int, str] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def close(self) -> None:
        self._http.close()

    # --- HTTP -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry {self.settings.url}: {exc!r}") from exc
        if resp.status_code >= 500:
            raise RegistryUnavailable(f"schema registry {self.settings.url}{path}: HTTP {resp.status_code}")
        if resp.status_code in (401, 403):
            raise ConfigError("STREAMSCORE_REGISTRY__USERNAME", f"registry answered HTTP {resp.status_code}")
        return resp

    @_retrying
    def ping(self) -> bool:
        return self._request("GET", "/subjects").status_code == 200

    @_retrying
    def subjects(self) -> list[str]:
        return list(self._request("GET", "/subjects").json())

    @_retrying
    def set_compatibility(self, subject: str, level: str = "BACKWARD") -> None:
        resp = self._request("PUT", f"/config/{subject}", {"compatibility": level})
        if resp.status_code == 409:  # Apicurio: another process created the rule at the same moment
            current = self._request("GET", f"/config/{subject}")
            if current.status_code == 200 and current.json().get("compatibilityLevel") == level:
                return
        if resp.status_code != 200:
            raise SchemaRejected(subject, resp.status_code, resp.text)

    @_retrying
    def _register_http(self, subject: str, schema: str) -> int:
        resp = self._request(
            "POST", f"/subjects/{subject}/versions", {"schema": schema, "schemaType": "AVRO"}
        )
        if resp.status_code != 200:
            raise SchemaRejected(subject, resp.status_code, resp.text)
        return int(resp.json()["id"])

    @_retrying
    def _lookup_http(self, subject: str, schema: str) -> int | None:
        resp = self._request("POST", f"/subjects/{subject}", {"schema": schema, "schemaType": "AVRO"})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise SchemaRejected(subject, resp.status_code, resp.text)
        return int(resp.json()["id"])

    @_retrying
    def _schema_http(self, schema_id: int) -> str | None:
        resp = self._request("GET", f"/schemas/ids/{schema_id}")
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return str(resp.json()["schema"])

    @_retrying
    def is_compatible(self, subject: str, schema: str) -> bool:
        resp = self._request(
            "POST",
            f"/compatibility/subjects/{subject}/versions/latest",
            {"schema": schema, "schemaType": "AVRO"},
        )
        if resp.status_code == 404:
            return True
        if resp.status_code != 200:
            raise SchemaRejected(subject, resp.status_code, resp.text)
        return bool(resp.json().get("is_compatible"))

    # --- cached API -----------------------------------------------------------------------
    def _cache_path(self, *parts: str) -> Path:
        return self._cache.joinpath(*parts)

    def _remember(self, schema_id: int, schema: str, subject: str | None = None) -> None:
        self._by_id[schema_id] = schema
        try:
            path = self._cache_path("ids", f"{schema_id}.avsc")
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(schema)
            if subject:
                self._ids[(subject, fingerprint(schema))] = schema_id
                spath = self._cache_path("subjects", subject, f"{fingerprint(schema)}.id")
                spath.parent.mkdir(parents=True, exist_ok=True)
                spath.write_text(str(schema_id))
        except OSError as exc:  # a read-only disk must not stop the pipeline
            log.warning("schema_cache_write_failed", error=str(exc))

    def schema_id(self, subject: str, schema: dict[str, Any] | str, register: bool) -> int:
        """Id of ``schema`` under ``subject``: registered if allowed, else it must exist.

        Falls back to the disk cache when the registry is unavailable.
        """
        text = canonical(schema)
        key = (subject, fingerprint(text))
        if key in self._ids:
            return self._ids[key]
        try:
            found = self._register_http(subject, text) if register else self._lookup_http(subject, text)
        except RegistryUnavailable:
            cached = self._cache_path("subjects", subject, f"{key[1]}.id")
            if cached.exists():
                schema_id = int(cached.read_text())
                log.warning("registry_unavailable_using_cache", subject=subject, schema_id=schema_id)
                self._ids[key] = schema_id
                self._by_id[schema_id] = text
                return schema_id
            raise
        if found is None:
            raise ConfigError(
                "STREAMSCORE_REGISTRY__MODE",
                f"mode is 'require' but subject {subject} has no such schema registered",
            )
        self._remember(found, text, subject)
        return found

    def schema_by_id(self, schema_id: int) -> str | None:
        """Writer schema text for an id, from memory, disk, then the registry."""
        if schema_id in self._by_id:
            return self._by_id[schema_id]
        path = self._cache_path("ids", f"{schema_id}.avsc")
        if path.exists():
            self._by_id[schema_id] = path.read_text()
            return self._by_id[schema_id]
        text = self._schema_http(schema_id)
        if text is not None:
            self._remember(schema_id, text)
        return text
